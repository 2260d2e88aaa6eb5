"""favmigrate: take a live PostgreSQL through the Phase 4 favorites-priority migration, safely."""

__version__ = "0.1.0"
