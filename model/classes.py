"""The 25 LLP event classes in the order used by every file, model and metric."""

from ..contract import NUM_CLASSES

LLP_CLASSES: tuple[str, ...] = (
    "Speech",
    "Car",
    "Cheering",
    "Dog",
    "Cat",
    "Frying_(food)",
    "Basketball_bounce",
    "Fire_alarm",
    "Chainsaw",
    "Cello",
    "Banjo",
    "Singing",
    "Chicken_rooster",
    "Violin_fiddle",
    "Vacuum_cleaner",
    "Baby_laughter",
    "Accordion",
    "Lawn_mower",
    "Motorcycle",
    "Helicopter",
    "Acoustic_guitar",
    "Telephone_bell_ringing",
    "Baby_cry_infant_cry",
    "Blender",
    "Clapping",
)
if len(LLP_CLASSES) != NUM_CLASSES:
    raise ImportError(f"{len(LLP_CLASSES)} LLP class names for {NUM_CLASSES} classes")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(LLP_CLASSES)}
