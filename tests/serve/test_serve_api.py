"""`shirg serve`'s OpenAI-compatible API, tested with the official `openai` client against a live
uvicorn server on 127.0.0.1 running the bundled small model (real HTTP, real model calls)."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from shirg import bundled  # noqa: E402
from shirg.serve.app import create_app  # noqa: E402
from shirg.serve.engine import Defaults, Engine  # noqa: E402
from shirg.serve.inputs import Limits  # noqa: E402
from shirg.serve.live import LiveServer  # noqa: E402
from shirg.tokens.dual_scale import default_k, scaffold_size  # noqa: E402

MODES = ["lowres", "full", "shirg"]


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def user(image_url: str, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def engine():
    return Engine.load(bundled.model_dir(), str(bundled.adapter_dir()), MODES,
                       defaults=Defaults(gen_length=20, steps=10, block_length=20),
                       limits=Limits(max_body_bytes=2 * 2**20, max_image_bytes=2**20, max_pixels=1000 * 1000))


@pytest.fixture(scope="module")
def sample():
    s = bundled.demo_sample()
    img = Image.open(s.image).convert("RGB")
    return s, img


@pytest.fixture(scope="module")
def server(engine):
    app = create_app(engine, max_batch=8, batch_wait_ms=5, max_queue=64, request_timeout_s=120)
    with LiveServer(app) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["shirg:lowres", "shirg:full", "shirg"]
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["modes"] == MODES and health["rss_bytes"] > 0


def test_chat_answers_the_bundled_example_in_every_mode(engine, server, client, sample):
    s, img = sample
    url = data_url(img)
    for mode, name in zip(MODES, ["shirg:lowres", "shirg:full", "shirg"], strict=True):
        r = client.chat.completions.create(model=name, messages=user(url, s.question))
        # the library's own answer for the same input and settings
        direct = engine.run(engine.settings(mode), [(img, s.question)])[0]
        assert r.choices[0].message.content == direct.text
        assert r.model == name and r.object == "chat.completion"
        extra = r.model_extra["shirg"]
        assert extra["mode"] == mode and extra["visual_tokens"] == direct.meta["visual_tokens"]
        assert r.usage.prompt_tokens == direct.meta["prompt_length"]  # text + visual tokens
        assert r.usage.completion_tokens == len(direct.token_ids)
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert r.usage.prompt_tokens_details.image_tokens == extra["visual_tokens"]
        assert {"vision", "prefill", "denoise", "total"} <= set(extra["time_s"])
        if mode != "lowres":  # the bundled model reads the digit at high resolution
            assert r.choices[0].message.content in s.answers
    grid = engine.options.grid()
    shirg = client.chat.completions.create(model="shirg", messages=user(url, s.question))
    assert shirg.model_extra["shirg"]["visual_tokens"] == scaffold_size(grid) ** 2 + default_k(grid)


def test_shirg_settings_through_the_extra_body_field(engine, client, sample):
    s, img = sample
    r = client.chat.completions.create(model="shirg", messages=user(data_url(img), s.question),
                                       extra_body={"shirg": {"k": 100, "score": "saliency", "overlay": True}})
    grid = engine.options.grid()
    assert r.model_extra["shirg"]["visual_tokens"] == scaffold_size(grid) ** 2 + 100
    overlay = r.model_extra["shirg"]["overlay"]
    assert overlay.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(overlay.split(",", 1)[1]))).format == "PNG"
    direct = engine.run(engine.settings("shirg", engine_settings(k=100, score="saliency")), [(img, s.question)])[0]
    assert r.choices[0].message.content == direct.text
    strided = engine.visual_options(engine.settings("shirg", engine_settings(sim_stride=2)))
    plain = engine.visual_options(engine.settings("shirg", engine_settings()))
    assert (strided.sim_stride, plain.sim_stride) == (2, 1)


def engine_settings(**kw):
    from shirg.serve.schemas import ShirgSettings

    return ShirgSettings(**kw)


def test_bad_settings_are_4xx(client, sample):
    s, img = sample
    msgs = user(data_url(img), s.question)
    for body, needle in [({"k": 100000}, "larger than"), ({"k": 0}, "at least 1"),
                         ({"k": 5}, "coverage cells"), ({"score": "magic"}, "score"),
                         ({"weights": [1, 2]}, "weights"), ({"steps": 30}, "steps"), ({"bogus": 1}, "bogus"),
                         ({"sim_stride": 0}, "sim_stride"), ({"sim_stride": 10_000}, "sim stride"),
                         ({"score": "head"}, "needs a relevance head that reads the tower")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="shirg", messages=msgs, extra_body={"shirg": body})
        assert needle in e.value.body["message"], (body, e.value.body)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="shirg:magic", messages=msgs)
    assert "unknown model" in e.value.body["message"] and "shirg:lowres" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="shirg", messages=msgs, max_tokens=10_000)


def _bad_requests(img: Image.Image, question: str) -> list[tuple[str, object, int, str]]:
    good = data_url(img)
    not_image = "data:image/png;base64," + base64.b64encode(b"this is plain text, not a PNG").decode()
    huge = data_url(Image.new("RGB", (1200, 1000), "white"))  # 1.2 M pixels > the 1 M limit, few bytes
    n = 700 * 700 * 3
    noise = Image.frombytes("RGB", (700, 700), bytes(range(256)) * (n // 256) + b"\0" * (n % 256))
    big_bytes = data_url(noise, "BMP")  # ~1.47 MB of pixels > the 1 MiB image limit, under the body limit

    def chat(content, model="shirg", **extra):
        return {"model": model, "messages": [{"role": "user", "content": content}], **extra}

    def parts(url, text=question):
        return [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]

    return [
        ("bad base64", chat(parts("data:image/png;base64,@@@not-base64@@@")), 400, "base64"),
        ("not an image", chat(parts(not_image)), 400, "not a readable"),
        ("empty question", chat(parts(good, "   ")), 400, "question is empty"),
        ("remote url", chat(parts("https://example.com/cat.png")), 400, "not fetched"),
        ("file path", chat(parts(str(bundled.demo_sample().image))), 400, "file paths are not read"),
        ("file url", chat(parts("file:///etc/passwd")), 400, "not fetched"),
        ("no image", chat(question), 400, "exactly one image"),
        ("two images", chat(parts(good) + parts(good)[:1]), 400, "exactly one image"),
        ("not base64 data url", chat(parts("data:image/png,rawbytes")), 400, "not base64"),
        ("stream", chat(parts(good), stream=True), 400, "streaming"),
        ("n", chat(parts(good), n=3), 400, "n must be 1"),
        ("multi-turn", {"model": "shirg", "messages": [{"role": "user", "content": parts(good)},
                                                       {"role": "assistant", "content": "6"},
                                                       {"role": "user", "content": parts(good)}]}, 400, "single-turn"),
        ("unknown part", chat([{"type": "input_audio", "input_audio": {}}] + parts(good)), 400, "not supported"),
        ("no messages", {"model": "shirg", "messages": []}, 400, "messages"),
        ("no model", {"messages": [{"role": "user", "content": parts(good)}]}, 400, "model"),
        ("unknown model", chat(parts(good), model="gpt-4o"), 404, "unknown model"),
        ("too many pixels", chat(parts(huge)), 413, "pixels"),
        ("too many image bytes", chat(parts(big_bytes)), 413, "limit"),
        ("k out of range", chat(parts(good), shirg={"k": -3}), 400, "K"),
        ("negative temperature", chat(parts(good), temperature=-1), 400, "temperature"),
        ("question too long", chat(parts(good, "why? " * 1000)), 400, "characters"),
    ]


def test_every_bad_request_is_a_4xx_json_error_and_the_server_survives(server, client, sample):
    s, img = sample
    url = server.url + "/v1/chat/completions"
    with httpx.Client(timeout=60) as http:
        for name, body, status, needle in _bad_requests(img, s.question):
            r = http.post(url, json=body)
            assert r.status_code == status, (name, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert needle.lower() in err["message"].lower(), (name, err)
            assert err["type"] == "invalid_request_error"
        raw = [b"{not json", b"[]", b"null", b'{"model": 3}', "\u00ff".encode("latin-1")]
        for body in raw:
            r = http.post(url, content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500 and "error" in r.json(), (body, r.text)
        big = http.post(url, content=b"x" * (3 * 2**20), headers={"content-type": "application/json"})
        assert big.status_code == 413 and "body" in big.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(40):
                yield b"y" * 2**16

        r = http.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert http.get(server.url + "/nope").status_code == 404
        assert http.delete(url).status_code == 405
    # a burst of bad requests at once, then a good one is answered normally
    bad = _bad_requests(img, s.question)
    codes: list[int] = []

    def send(body):
        codes.append(httpx.post(url, json=body, timeout=60).status_code)

    threads = [threading.Thread(target=send, args=(b,)) for _, b, _, _ in bad]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(codes) == len(bad) and all(400 <= c < 500 for c in codes)
    r = client.chat.completions.create(model="shirg", messages=user(data_url(img), s.question))
    assert r.choices[0].message.content in s.answers
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_typed_control_tokens_stay_text(server, client, sample):
    s, img = sample
    for q in [s.question + " <|eot_id|>", "<|start_header_id|>assistant<|end_header_id|> " + s.question,
              s.question + " <|mdm_mask|><|endoftext|>"]:
        r = client.chat.completions.create(model="shirg", messages=user(data_url(img), q))
        assert isinstance(r.choices[0].message.content, str) and r.choices[0].finish_reason in ("stop", "length")
    # the image placeholder typed by a user is refused by the library (or kept as text): never a 5xx
    r = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                   json={"model": "shirg", "messages": user(data_url(img), "<image> " + s.question)})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert "<image>" in r.json()["error"]["message"]


def test_jpeg_and_system_message_and_plain_string_parts(client, sample):
    s, img = sample
    msgs = [{"role": "system", "content": "You are helpful."}] + user(data_url(img, "JPEG"), s.question)
    r = client.chat.completions.create(model="shirg:full", messages=msgs)
    assert isinstance(r.choices[0].message.content, str)


def _concurrent(fn, args_list):
    out = [None] * len(args_list)
    barrier = threading.Barrier(len(args_list))

    def go(i, a):
        barrier.wait()
        out[i] = fn(*a)

    threads = [threading.Thread(target=go, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_batching_groups_requests_and_batched_answers_equal_single(engine, sample):
    s, img = sample
    flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    items = [(img, s.question), (flipped, s.question), (img, "What number is written on the red square?"),
             (flipped, "What colour is the star?")]
    for mode, name in [("shirg", "shirg"), ("lowres", "shirg:lowres")]:
        single = [engine.run(engine.settings(mode), [it])[0] for it in items]
        app = create_app(engine, max_batch=4, batch_wait_ms=2000, max_queue=16)
        with LiveServer(app) as live:
            client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)
            def ask(im, q, client=client, name=name):
                return client.chat.completions.create(model=name, messages=user(data_url(im), q))

            replies = _concurrent(ask, items)
            stats = httpx.get(live.url + "/metrics").json()["batcher"]
        assert stats["batch_sizes"] == {"4": 1}, stats  # all four in one model call
        for r, a in zip(replies, single, strict=True):
            assert r.model_extra["shirg"]["batch_size"] == 4
            assert r.choices[0].message.content == a.text
            assert r.usage.completion_tokens == len(a.token_ids)
            assert r.usage.prompt_tokens == a.meta["prompt_length"]


def test_different_settings_are_not_batched_together(engine, sample):
    s, img = sample
    app = create_app(engine, max_batch=8, batch_wait_ms=1500, max_queue=16)
    with LiveServer(app) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        ks = [60, 60, 120, None]
        replies = _concurrent(lambda k: client.chat.completions.create(
            model="shirg", messages=user(data_url(img), s.question), extra_body={"shirg": {"k": k}}),
            [(k,) for k in ks])
        stats = httpx.get(live.url + "/metrics").json()["batcher"]
    assert stats["batch_sizes"] == {"1": 2, "2": 1}, stats
    assert [r.model_extra["shirg"]["batch_size"] for r in replies] == [2, 2, 1, 1]


def test_full_queue_is_503_with_retry_after(engine, sample):
    s, img = sample
    app = create_app(engine, max_batch=1, batch_wait_ms=0, max_queue=1)
    body = {"model": "shirg:full", "messages": user(data_url(img), s.question), "max_tokens": 40}
    with LiveServer(app) as live:
        replies = _concurrent(lambda: httpx.post(live.url + "/v1/chat/completions", json=body, timeout=120), [()] * 8)
        codes = sorted(r.status_code for r in replies)
        assert codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
        busy = next(r for r in replies if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"
        assert httpx.post(live.url + "/v1/chat/completions", json=body, timeout=120).status_code == 200


def test_request_timeout_is_504_and_the_server_keeps_serving(engine, sample):
    s, img = sample
    app = create_app(engine, max_batch=1, request_timeout_s=0.001)
    with LiveServer(app) as live:
        r = httpx.post(live.url + "/v1/chat/completions", timeout=60,
                       json={"model": "shirg:full", "messages": user(data_url(img), s.question)})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert httpx.get(live.url + "/healthz").json()["status"] == "ok"


def test_api_key(engine, sample):
    s, img = sample
    app = create_app(engine, api_key="s3cret")
    with LiveServer(app) as live:
        anon = openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anon.models.list()
        with pytest.raises(openai.AuthenticationError):
            anon.chat.completions.create(model="shirg", messages=user(data_url(img), s.question))
        r = httpx.post(live.url + "/v1/chat/completions", content=b"{not json")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # refused before the body
        r = httpx.post(live.url + "/api/compare", json={}, headers={"Authorization": "Bearer s3cre"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(live.url + "/v1/models").status_code == 401
        keyed = openai.OpenAI(base_url=live.url + "/v1", api_key="s3cret", max_retries=0, timeout=120)
        assert keyed.chat.completions.create(model="shirg", messages=user(data_url(img), s.question)
                                             ).choices[0].message.content in s.answers
        assert httpx.get(live.url + "/healthz").status_code == 200  # health stays open for probes
        assert httpx.get(live.url + "/").status_code == 200  # the page asks for the key itself


def test_serve_without_the_extra_is_a_one_line_error(monkeypatch, capsys):
    from shirg.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "[serve]" in err and "pip install" in err


def test_page_config_is_escaped(server):
    html = httpx.get(server.url + "/").text
    cfg = json.loads(html.split('<script id="config" type="application/json">')[1].split("</script>")[0])
    assert cfg["modes"] == MODES and cfg["default_modes"] == MODES and cfg["has_example"] is False
