"""The Ask tab's layout and events: the question panel (media, question, examples, settings) on the
left, the streamed reasoning on the right. What the events do lives in app/ask/session.py."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from app import UI_ONLY, Studio
from app.ask import examples as E
from app.ask import session as A
from app.public.limits import MODEL_RUNS, ask_numbers, ask_validator, visitor_key
from app.public.names import public_model_name
from app.shared.visitors import visitor
from core.backends import BACKENDS

EMBEDDED_NOTE = ("*The embedded model (9M parameters) learned only from synthetic TinyZoom pictures: small "
                 "number tags, coloured shapes, and signs that show in a few frames of a short video. Try the "
                 "examples or pictures like them; for real photos choose a real model in Settings.*")


def default_model(studio: Studio) -> str:
    """What the Model field starts with: the replay file, the model given at start, or empty (embedded)."""
    return studio.replay if studio.backend == "replay" else (studio.model or "")


def build(studio: Studio) -> gr.Textbox:
    """The tab's content (inside its gr.Tab); returns the Model field, which the Train tab can fill."""
    examples = E.load_examples(studio)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            form = question_panel(studio, examples)
            s = settings_panel(studio)
        with gr.Column(scale=3):
            out = answer_panel()
    wire_ask(studio, examples, form, s, out)
    wire_inputs(examples, form, s, out)
    return s.model


def question_panel(studio: Studio, examples: list[dict]) -> SimpleNamespace:
    media = gr.File(label="Image or video", file_types=["image", "video"], type="filepath", elem_id="media")
    preview_img = gr.Image(label="Preview", type="filepath", interactive=False, height=220, visible=False,
                           elem_id="media-preview", buttons=[])
    preview_vid = gr.Video(label="Preview", interactive=False, height=220, visible=False,
                           elem_id="media-preview-video")
    question = gr.Textbox(label="Question", lines=2, elem_id="question",
                          placeholder="What is written on the small sign?")
    with gr.Row():
        ask_btn = gr.Button("Ask", variant="primary", elem_id="ask-btn")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
    gallery = gr.Gallery([(E.thumbnail(studio, e["media"]), e["label"]) for e in examples],
                         label="Examples (click one)", columns=3, height=260, allow_preview=False,
                         elem_id="examples", buttons=[])
    return SimpleNamespace(media=media, preview_img=preview_img, preview_vid=preview_vid, question=question,
                           ask_btn=ask_btn, stop_btn=stop_btn, gallery=gallery)


def settings_panel(studio: Studio) -> SimpleNamespace:
    with gr.Accordion("Settings", open=False, elem_id="ask-settings"):
        backend = gr.Dropdown(list(BACKENDS), value=studio.backend, label="Backend")
        shown = public_model_name(default_model(studio)) if studio.isolate else default_model(studio)  # in /config
        model = gr.Textbox(value=shown, label="Model", elem_id="ask-model",
                           placeholder="empty = embedded model; hub id, local path, "
                                       "OpenAI URL, or (replay) a JSON file of turns")
        tools = gr.Checkbox(True, label="Visual operations (tools) on")
        compare = gr.Checkbox(False, label="Compare: also run with tools off")
        temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature")
        max_ops = gr.Slider(1, 8, value=4, step=1, label="Max operations")
        max_new = gr.Slider(16, 2048, value=512, step=16, label="Max new tokens per turn")
        guideline = gr.Radio(["vcot", "default"], value="vcot", label="Guideline variant")
    return SimpleNamespace(backend=backend, model=model, tools=tools, compare=compare, temperature=temperature,
                           max_ops=max_ops, max_new=max_new, guideline=guideline)


def answer_panel() -> SimpleNamespace:
    gr.Markdown(EMBEDDED_NOTE, elem_id="model-note")
    status = gr.Markdown("", elem_id="answer-status")
    chat = gr.Chatbot(label="Reasoning", height=640, elem_id="chat", feedback_options=None,
                      buttons=["copy_all"], group_consecutive_messages=False)
    chat_off = gr.Chatbot(label="Compare: tools off", height=300, elem_id="chat-off",
                          feedback_options=None, visible=False)
    return SimpleNamespace(status=status, chat=chat, chat_off=chat_off)


def settings_of(backend_name, model_name, tools_on, temp, ops, new_tokens, guide, cmp) -> A.AskSettings:
    """The form's values as AskSettings, clamped to the sliders' ranges; TypeError/ValueError if not
    finite numbers (NaN included)."""
    temp, ops, new_tokens = ask_numbers(temp, ops, new_tokens)
    return A.AskSettings(
        backend=backend_name, model=model_name or "", tools=bool(tools_on), temperature=temp, max_ops=ops,
        guideline=guide if guide in ("vcot", "default") else "vcot", max_new_tokens=new_tokens, compare=bool(cmp))


def wire_ask(studio: Studio, examples: list[dict], form, s, out) -> None:
    """Ask (the /ask endpoint, streamed) and Stop."""
    def ask(media_path, q, backend_name, model_name, tools_on, temp, ops, new_tokens, guide, cmp,
            request: gr.Request):
        if studio.isolate:  # visitors use the operator's model: no server paths or URLs from them
            backend_name, model_name = studio.backend, default_model(studio)
        try:
            settings = settings_of(backend_name, model_name, tools_on, temp, ops, new_tokens, guide, cmp)
        except (TypeError, ValueError, OverflowError):
            yield [], [], "⚠️ the settings must be numbers within the sliders' ranges"
            return
        owner = visitor(studio, request)
        yield from A.ask_stream(studio, media_path, q, settings, request.session_hash,
                                E.expected_answer(examples, media_path), owner,
                                visitor_key(request) if studio.isolate else None)

    def stop(request: gr.Request):
        n = A.stop(studio, request.session_hash)
        return "stopping…" if n else "nothing is running"

    inputs = [form.media, form.question, s.backend, s.model, s.tools, s.temperature, s.max_ops, s.max_new,
              s.guideline, s.compare]
    form.ask_btn.click(ask, inputs, [out.chat, out.chat_off, out.status], api_name="ask",
                       concurrency_limit=studio.max_concurrent_runs, concurrency_id=MODEL_RUNS,
                       validator=ask_validator(studio))
    form.stop_btn.click(stop, None, out.status, api_name="stop", concurrency_limit=None)


def wire_inputs(examples: list[dict], form, s, out) -> None:
    """An example fills the form; an upload shows its preview; Compare shows the second panel."""
    def pick_example(evt: gr.SelectData):
        e = examples[evt.index]
        return e["media"], e["question"]

    def show_preview(path):
        video = bool(path) and Path(path).suffix.lower() in E.VIDEO_SUFFIXES
        return (gr.update(value=path if path and not video else None, visible=bool(path) and not video),
                gr.update(value=path if video else None, visible=video))

    form.gallery.select(pick_example, None, [form.media, form.question], **UI_ONLY)
    form.media.change(show_preview, form.media, [form.preview_img, form.preview_vid], **UI_ONLY)
    s.compare.change(lambda c: gr.update(visible=c), s.compare, out.chat_off, **UI_ONLY)
