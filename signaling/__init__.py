"""WebRTC signaling: payload validation and the ICE server list."""
