"""The Overview's copyable curl / Python / Node snippets, each quoted for its language.

A model name is free text (an admin typed it), so it is never pasted between quotes: the
shell gets one single-quoted argument holding a JSON body, Python and JavaScript get a
string literal built by json.dumps (valid in both languages and equal to the name)."""

import json
import shlex


def _js(value: str) -> str:
    # ASCII-only escapes: what JSON.stringify accepts back, and safe in any JS source file.
    return json.dumps(value)


def _py(value: str) -> str:
    # Non-ASCII kept as is: a \\ud83d\\ude00 pair would be two lone surrogates in Python.
    return json.dumps(value, ensure_ascii=False)


def quickstart(*, base_url: str, model: str) -> dict[str, str]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
    curl = (
        f"curl {shlex.quote(base_url + '/chat/completions')} \\\n"
        '  -H "Authorization: Bearer $BONITO_API_KEY" -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}"
    )
    python = (
        "import os\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url={_py(base_url)}, api_key=os.environ["BONITO_API_KEY"])\n'
        f'reply = client.chat.completions.create(model={_py(model)}, messages=[{{"role": "user", "content": "Hello"}}])\n'
        "print(reply.choices[0].message.content)"
    )
    node = (
        'import OpenAI from "openai";\n\n'
        f"const client = new OpenAI({{ baseURL: {_js(base_url)}, apiKey: process.env.BONITO_API_KEY }});\n"
        f'const reply = await client.chat.completions.create({{ model: {_js(model)}, messages: [{{ role: "user", content: "Hello" }}] }});\n'
        "console.log(reply.choices[0].message.content);"
    )
    return {"curl": curl, "python": python, "node": node}
