"""Data exports of a search tree (JSON trace, and the formats the store adds)."""
