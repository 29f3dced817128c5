"""The main window's concerns, one module each (napari's `_qt/_qapp_model/qactions` shape):
models, runs, live_view, sessions, export, appearance, settings, help; `parts` holds the
state they share. `app.main_window.MainWindow` composes them."""
