"""The harness's network room: its own WebSocket (a thin layer over ``websockets``' sans-IO
protocol) and the reactor that reads many sockets from one task. Sans-IO cores never import it."""
