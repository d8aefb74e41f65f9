"""`python -m providers.fake`: run the fake provider server (see providers/fake/server.py)."""

from providers.fake.server import main

main()
