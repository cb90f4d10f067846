"""Rooms: the sans-I/O protocol core (codec, room state) and the I/O around it (hub, broker)."""
