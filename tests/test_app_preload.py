"""The app loads its default model in the background at start (app.ask.session.preload_backend)."""
from app import Studio
from app.ask import session as A
from core.sessionlog import SessionLog


def test_the_default_model_is_loaded_and_warmed_up_before_the_first_ask(tmp_path, caplog):
    caplog.set_level("INFO", logger="app.ask")
    studio = Studio(log=SessionLog(tmp_path / "studio.db"), data_dir=tmp_path)
    A._BACKENDS.pop(("transformers", None), None)
    thread = A.preload_backend(studio)
    thread.join(timeout=300)
    assert not thread.is_alive() and ("transformers", None) in A._BACKENDS
    assert any("model warmed up" in r.getMessage() for r in caplog.records)  # a first forward pass ran
    loaded = A._BACKENDS[("transformers", None)]
    # the Ask tab's settings for the default model find the same loaded backend
    assert A.get_backend(studio, A.AskSettings(model="")) is loaded
    assert A.preload_backend(Studio(log=studio.log, data_dir=tmp_path, backend="replay")) is None
