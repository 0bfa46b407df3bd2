"""Local service stack on 127.0.0.1 for tests and the demo: real servers, real outages."""
