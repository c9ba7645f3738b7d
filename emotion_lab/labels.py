"""The six dair-ai/emotion labels, in the order of the hub dataset's ClassLabel."""

LABELS: tuple[str, ...] = ("sadness", "joy", "love", "anger", "fear", "surprise")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
NUM_CLASSES: int = len(LABELS)
