"""hqstream: the command line and the local runner that tie the services together."""
