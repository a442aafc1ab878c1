"""The large demos in `maas up`: build (once), register, and show how to call them.

Each is built under `<data>/models/<name>` (cached by its stamp, so only the first
run pays) and registered with alias `production` unless the registry already has
it. Beside them, `<data>/requests/` gets the sample inputs the printed examples use:
scikit-image's chelsea as a PNG, and as the JSON body of a REST request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tools.demo import efficientnet, minilm, smollm2

if TYPE_CHECKING:
    from services.common.tls_client import ClientTLS

LARGE_DEMOS: dict[str, Callable[[Path], None]] = {
    minilm.NAME: minilm.build,
    smollm2.NAME: smollm2.build,
    efficientnet.NAME: efficientnet.build,
}
CHELSEA_PNG = "chelsea.png"
CHELSEA_JSON = "efficientnet-chelsea.json"
_MESSAGES = '[{"role": "user", "content": "What is the capital of France?"}]'


@dataclass(frozen=True)
class Registered:
    """What ensure_large_demos did for one model, for `maas up` to print."""

    name: str
    message: str
    seconds: float


def ensure_large_demos(
    data: Path,
    registry: str,
    token: str | None,
    report: Callable[[Registered], None] = lambda done: None,
    tls: ClientTLS | None = None,
) -> list[Registered]:
    """Build and register every large demo the registry does not have yet; `report`
    hears of each as it is done."""
    import asyncio

    from services.common.errors import NotFound
    from services.registry.client import RegistryClient
    from tools.demo.upload import upload_model_dir

    async def missing() -> list[str]:
        absent = []
        async with RegistryClient(registry, token, tls=tls) as client:
            for name in LARGE_DEMOS:
                try:
                    await client.get_model(name)
                except NotFound:
                    absent.append(name)
        return absent

    write_requests(data / "requests")
    absent = asyncio.run(missing())
    done = []
    for name, build in LARGE_DEMOS.items():
        if name not in absent:
            done.append(Registered(name, f"the registry already has '{name}'", 0.0))
            report(done[-1])
            continue
        start = time.monotonic()
        model_dir = data / "models" / name
        print(f"building the {name} demo model from its package (once) ...", flush=True)
        build(model_dir)
        upload_model_dir(registry, token, name, model_dir, description=_describe(name), tls=tls)
        seconds = time.monotonic() - start
        done.append(Registered(name, f"registered '{name}' (alias production)", seconds))
        report(done[-1])
    return done


_OPENAI_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _describe(name: str) -> str:
    module = {minilm.NAME: minilm, smollm2.NAME: smollm2, efficientnet.NAME: efficientnet}[name]
    return (module.__doc__ or name).splitlines()[0]


def write_requests(folder: Path) -> None:
    """chelsea.png and a REST body classifying it, unless they are there already."""
    png, body = folder / CHELSEA_PNG, folder / CHELSEA_JSON
    if png.is_file() and body.is_file():
        return
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.chelsea()).save(png)
    picture = efficientnet.chelsea()
    request = {
        "inputs": [
            {
                "name": "image",
                "shape": [1, *picture.shape],
                "datatype": "UINT8",
                "data": picture.reshape(-1).tolist(),
            }
        ]
    }
    body.write_text(json.dumps(request, separators=(",", ":")))


def examples(
    grpc_address: str, http_url: str | None, data: Path, headers: str, curl_auth: str
) -> list[str]:
    """Banner lines: a Python (tritonclient) and a curl example for each large demo."""
    requests = data.resolve() / "requests"
    lines = [
        "Python, the large demos (tritonclient; same client as above):",
        '    t = tc.InferInput("text", [2], "BYTES")',
        '    t.set_data_from_numpy(np.array([b"A man eats food.", b"Stocks fell."], object))',
        f'    print(client.infer("minilm", [t]{headers}).as_numpy("embedding").shape)  # (2, 384)',
        '    m = tc.InferInput("messages", [1], "BYTES")  # or text_input, a prompt as is',
        f"    m.set_data_from_numpy(np.array([b'{_MESSAGES}'], object))",
        '    e = tc.InferInput("exclude_input_in_output", [1], "BOOL")',
        "    e.set_data_from_numpy(np.array([True]))",
        f'    print(client.infer("smollm2", [m, e]{headers}).as_numpy("text_output"))',
        "    from tools.demo.images import preprocess; import skimage.data",
        '    i = tc.InferInput("image", [1, 224, 224, 3], "UINT8")',
        "    i.set_data_from_numpy(preprocess(skimage.data.chelsea())[None])",
        f'    print(client.infer("efficientnet", [i]{headers}).as_numpy("probabilities")'
        ".argmax())  # 285",
        "  maas infer minilm --text 'A man eats food.'     maas chat smollm2",
        f"  maas infer efficientnet --input {requests / CHELSEA_PNG}",
    ]
    if http_url:
        text = (
            '{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES",'
            '"data":["A man eats food."]}]}'
        )
        messages = json.dumps(_MESSAGES)
        prompt = (
            f'{{"inputs":[{{"name":"messages","shape":[1],"datatype":"BYTES","data":[{messages}]}},'
            '{"name":"exclude_input_in_output","shape":[1],"datatype":"BOOL","data":[true]}]}'
        )
        lines += [
            "curl (the gateway's REST front door):",
            f"    curl -s {curl_auth}{http_url}/v2/models/minilm/infer -d '{text}'",
            f"    curl -s {curl_auth}{http_url}/v2/models/smollm2/infer -d '{prompt}'",
            f"    curl -s {curl_auth}{http_url}/v2/models/efficientnet/infer "
            f"-d @{requests / CHELSEA_JSON}",
        ]
        lines += openai_examples(http_url, curl_auth)
    return lines


def openai_examples(http_url: str, curl_auth: str) -> list[str]:
    """Banner lines for the OpenAI-compatible routes: the `openai` package and curl."""
    key = "<API key>" if curl_auth else "unused"
    chat = json.dumps(
        {"model": smollm2.NAME, "messages": _OPENAI_MESSAGES, "max_tokens": 32},
        separators=(",", ":"),
    )
    return [
        "OpenAI API (pip install openai; any OpenAI client works):",
        "    from openai import OpenAI",
        f'    ai = OpenAI(base_url="{http_url}/v1", api_key="{key}")',
        f"    messages = {_OPENAI_MESSAGES!r}",
        f'    r = ai.chat.completions.create(model="{smollm2.NAME}", messages=messages)',
        "    print(r.choices[0].message.content)",
        f'    e = ai.embeddings.create(model="{minilm.NAME}", input="A man eats food.")',
        "    print(len(e.data[0].embedding))  # 384",
        f"    curl -sN {curl_auth}{http_url}/v1/chat/completions "
        f"-H 'content-type: application/json' -d '{chat[:-1]},\"stream\":true}}'",
    ]
