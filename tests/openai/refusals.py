"""What the scripts under tests/openai share: a refused call as its status and OpenAI's body."""

import openai


def error_of(call):
    """The status and error body of a call the server refuses; None when it answers."""
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {"status": e.status_code, "error": body}
    return None
