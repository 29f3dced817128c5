"""Reusable Qt views: tree canvas, trace, charts, timeline, sessions browser, run forms."""
