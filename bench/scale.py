"""How big the benchmark's sandbox is: the issue's default data set times ``--scale``."""
from __future__ import annotations

from dataclasses import dataclass

STORES = ("k3x9q2m7a1", "p8w4z6t2n5")  # the stores of config/pipeline.yml
SQUARE_LOCATIONS = 3

# Issue 8's default data set, in total over the stores / locations.
BASE_ORDERS = 200_000
BASE_CUSTOMERS = 50_000
BASE_PAYMENTS = 200_000


@dataclass(frozen=True)
class Scale:
    factor: float

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"--scale must be positive, not {self.factor}")

    def times(self, multiplier: float) -> Scale:
        return Scale(self.factor * multiplier)

    def _count(self, base: int, parts: int) -> int:
        return max(1, round(base * self.factor / parts))

    @property
    def orders_per_store(self) -> int:
        return self._count(BASE_ORDERS, len(STORES))

    @property
    def customers_per_store(self) -> int:
        return self._count(BASE_CUSTOMERS, len(STORES))

    @property
    def payments_per_location(self) -> int:
        return self._count(BASE_PAYMENTS, SQUARE_LOCATIONS)

    def describe(self) -> dict:
        return {"factor": self.factor, "stores": len(STORES), "orders_per_store": self.orders_per_store,
                "customers_per_store": self.customers_per_store, "square_locations": SQUARE_LOCATIONS,
                "payments_per_location": self.payments_per_location,
                "orders_total": self.orders_per_store * len(STORES),
                "customers_total": self.customers_per_store * len(STORES),
                "payments_total": self.payments_per_location * SQUARE_LOCATIONS}
