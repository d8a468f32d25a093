"""The simulator prices the tests and benchmarks set, and what each exchanger then serves."""

PRICES = {
    "binance": {"BTCUSDT": "70000", "ETHUSDT": "3200"},
    "coingecko": {
        "bitcoin": {"usd": 70100, "rub": 6700000},
        "ethereum": {"usd": 3210.5, "rub": 306000},
        "tether": {"usd": 1.0003, "rub": 95.5},
    },
}
EXPECTED = {
    "binance": {
        "BTC-USD": "70000",
        "BTC-RUB": "6685000",  # 70000 x 95.5 (CoinGecko tether->rub)
        "ETH-USD": "3200",
        "ETH-RUB": "305600",
        "USDTTRC-USD": "1",
        "USDTTRC-RUB": "95.5",
        "USDTERC-USD": "1",
        "USDTERC-RUB": "95.5",
    },
    "coingecko": {
        "BTC-USD": "70100",
        "BTC-RUB": "6700000",
        "ETH-USD": "3210.5",
        "ETH-RUB": "306000",
        "USDTTRC-USD": "1.0003",
        "USDTTRC-RUB": "95.5",
        "USDTERC-USD": "1.0003",
        "USDTERC-RUB": "95.5",
    },
}
