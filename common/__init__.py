"""The bottom layer: what every other layer may import (the app-wide error types)."""
