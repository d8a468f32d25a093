"""ratesvc: live crypto exchange rates from Binance and CoinGecko with failover."""

__version__ = "0.1.0"
