"""Cluster coordination: the etcd client, and running etcd locally."""
