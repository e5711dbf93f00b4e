"""lm-eval's hellaswag preprocessing, for the local file whose `ctx` already joins ctx_a and ctx_b (so lm-eval's
ctx_b.capitalize() cannot be re-applied; see ../README.md)."""
import re


def preprocess(text):
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def process_docs(dataset):
    def _process_doc(doc):
        return {
            "query": preprocess(doc["activity_label"] + ": " + doc["ctx"]),
            "choices": [preprocess(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_process_doc)
