#!/usr/bin/env python3
"""`python cli.py ...` from a checkout: the same CLI as the `turboann` console script."""
from turboann.cli import main

if __name__ == "__main__":
    main()
