"""The mock OpenAI Realtime server: sans-IO session logic, audio side, and a thin server."""
