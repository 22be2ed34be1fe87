"""What travels between the coordinator and the hospitals (flwr-free): :mod:`protocol.messages`."""
