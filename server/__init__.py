"""Menteo Rooms server: app factory, settings, tokens, HTTP and WebSocket endpoints, CLI."""
