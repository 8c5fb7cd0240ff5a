"""Ask the served assistant for an article's headline and topic with the official ``openai`` client.

    flywheel serve &                 # the champion, OpenAI-compatible, on 127.0.0.1:8000
    python ask.py                    # tech/101.txt: an article beyond the 75 per topic trained on
    python ask.py --article sports/120.txt --url http://127.0.0.1:8000/v1
"""

import argparse

from openai import OpenAI

from dataflywheel.data.bbc import corpus_folder
from dataflywheel.data.instructions import prompts, split_article

TOPICS = ["business", "entertainment", "politics", "sports", "tech"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--article", default="tech/101.txt", help="a file of the BBC corpus, topic/NNN.txt")
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="assistant", help="the project's name (or the alias served)")
    args = parser.parse_args()
    title, body = split_article((corpus_folder() / args.article).read_text(encoding="utf-8", errors="replace"))
    client = OpenAI(base_url=args.url, api_key="unused")  # any key unless FLYWHEEL_API_TOKEN is set
    print(f"article {args.article}: {title!r} (the real title)")
    for kind, prompt in prompts(body, TOPICS).items():
        r = client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=24, temperature=0)
        print(f"{kind}: {r.choices[0].message.content!r} ({r.usage.completion_tokens} tokens, "
              f"finish_reason {r.choices[0].finish_reason})")
