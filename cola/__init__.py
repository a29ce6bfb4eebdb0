"""Shared core of the CoLA pipeline: configuration, data, model. Stages in stages/ are thin wrappers."""
