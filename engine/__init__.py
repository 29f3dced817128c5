"""Thoughtscope's Qt-free core: llama.cpp driving, search, verifiers, events, store, exports."""

__version__ = "0.1.0"
