"""The tidelog broker: Kafka's wire protocol over the embedded log, on Trio."""

from tidelog.broker.config import BrokerConfig
from tidelog.broker.server import Broker

__all__ = ["Broker", "BrokerConfig"]
