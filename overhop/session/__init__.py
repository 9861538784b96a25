"""Connection states and the messages each allows. Pure."""
