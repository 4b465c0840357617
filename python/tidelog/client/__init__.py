"""tidelog's native client pieces."""
