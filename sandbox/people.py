"""Deterministic people for the data generators: non-ASCII names, emails in mixed case, phones."""
from __future__ import annotations

import random
from dataclasses import dataclass

FIRST_NAMES = ["Anna", "Jürgen", "Zoë", "José", "Søren", "Mei", "Łukasz", "Amélie", "Noah", "Fatma",
               "Olivia", "Björn", "Chloé", "Mateo", "Aiko", "Ines", "Émile", "Priya", "Dmitrij", "Ola"]
LAST_NAMES = ["Müller", "García", "O'Brien", "Nguyễn", "Kowalski", "Schröder", "Dubois", "Smith",
              "Sørensen", "Yılmaz", "Rossi", "Tanaka", "Fernández", "Jansen", "Novák", "Weiß"]
DOMAINS = ["example.com", "mail.example.org", "shop.example.net", "beispiel.de"]


@dataclass(frozen=True)
class Person:
    first_name: str
    last_name: str
    email: str
    phone: str


def person(seed: int, index: int) -> Person:
    """The same (seed, index) always gives the same person; emails are unique per index."""
    rng = random.Random(f"{seed}:person:{index}")
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    local = f"{first}.{last}".encode("ascii", "ignore").decode().replace("'", "").lower()
    email = f"{local}.{index}@{rng.choice(DOMAINS)}"
    if rng.random() < 0.1:  # some shoppers type their address in capitals or with spaces
        email = f" {email.upper()} " if rng.random() < 0.5 else email.capitalize()
    phone = f"+49 30 {rng.randrange(1000000, 9999999)}"
    return Person(first, last, email, phone)
