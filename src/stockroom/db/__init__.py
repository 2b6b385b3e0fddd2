"""The PostgreSQL/SQLite side: tables, repositories, the unit of work and migrations."""
