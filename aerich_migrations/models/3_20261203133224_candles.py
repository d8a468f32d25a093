from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "rate_candle" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "exchanger" VARCHAR(32) NOT NULL,
    "direction" VARCHAR(32) NOT NULL,
    "interval_s" INT NOT NULL,
    "bucket_ms" BIGINT NOT NULL,
    "open" NUMERIC NOT NULL,
    "high" NUMERIC NOT NULL,
    "low" NUMERIC NOT NULL,
    "close" NUMERIC NOT NULL,
    "ticks" INT NOT NULL,
    "open_ms" BIGINT NOT NULL,
    "close_ms" BIGINT NOT NULL,
    CONSTRAINT "uid_rate_candle_exchang_9c3c58" UNIQUE ("exchanger", "direction", "interval_s", "bucket_ms")
);
COMMENT ON TABLE "rate_candle" IS 'OHLC rollups of rate_tick per interval, maintained by the persister';"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "rate_candle";"""


MODELS_STATE = (
    "eJztW9tu2zgQ/RXCL2sDrps4N2/fUsdtvEjsReLtFm0KiZYYi7BEqiSVxOjm35ek7rLlWG"
    "mQJq4eClgzPKPRGV40R+mPhkdt5PJOHxLbRRf0tvEO/GgQ6CH5Y9nZBg3o+6lLGQScuno0"
    "gwIZlh6rB065YNAS0nUNXY6kyUbcYtgXmBIFGJ+e9QGjrhv4HNBroAMIbM2BjxjARCB2A9"
    "028KD8Lf8hG0wXQDhI+Tnm0q9uZFNL3gmTmY5JENBxw0RUWCpNTXRnOZDMEGsDGzNkqRxa"
    "gN7IGyn/NLDmSICmfhhgmplnMc1W54pckfPyLGSu2iCfl3CoY8trKKSdIyZ46JQPxkGTC8"
    "rQ2zA07/iLVhtcM+pdkXSMjBBA111EcGTLIZQBJJNdJLSoJ9OxOnGs4WgyuPh0fHZpXHaA"
    "SX1EDI+bQHqviGm5lKPwmqEoHw9p2tMbT5GDiR1iNRCEOLMNOAUQuJIVIDOhgXhDr99QZi"
    "N2RaZQWA7wEJvJeBZlil138U7iAYLMxZIfXVSGfBdaKGRD3aIdhQxLoKz6bh1V1IDg74Gc"
    "DXSGpIPJ0n792kiKqMsel1FdxKwYekqG1ZRP2/j2TTttdIe4iqEu/blxjZFr56Y6thVQ2w"
    "2x8LXtPZ4Nifigx6obTg2LuoFH0vH+QjiUJACZhbLOEEFqAqk7CBaomU8C143WSbwYwidM"
    "h4RZZjA2uoaBq9aPQocJpLaGYYzGE+NyMDGMxtLaihGZpRGZLErUupSpck3ATKXw5s9ud2"
    "/vqLuzd9g72D86Oujt9ORYne+y6+g+TCZlKwylORt+lPNQJUTl4g83BmW41xgoYIjSxUjZ"
    "zxU2X4S+A9nqEuRAhUrIRyxWIuZ9XSliQ1qLdOt6jmJ48M5wEZkJR17uddfw/On4on96fN"
    "Hc67byZI8iT1e7FO0pzbklsynNOVBN8wY05zejPM/lG0oO9PDG8hp4DveW7u7+0X5v73A/"
    "2VISy7qdJN41Ul7Tbb3SVp2DbROxz7Jpp/SrI3uZ+cGdfF05QRb2oLua/xhXoN4OMZ0I+w"
    "rLsIbR0T/ng4thv8Cgg2fOYxiMcTWDbtiEVCUwgtX86RfsxzCYAGsOda9U4WRPxm/T2fNk"
    "h3rUp1Y70jOgbSL1mQ/0WBOoxn0WVZNfiXylPlzPMx2wMkyhNb+FzDaWPLRLy8Yuu7yuV7"
    "RAAmeaTvXcKuFIz7uQtSmR+mJX+0GhT+1qm8l8KiZwsBKrFu+01MPorZb4/GDqYu4gOxSI"
    "mthGnk8FIgIoBU3aDGy3Vmp8KVT2TEGi8yXNqhbVtCmRCQrqngofa3tmdC8T4FCesqkSHf"
    "/gIEnJWoA5UqoWYEgygm8Qi/N2cCTxhTMa6Hms5TPMrwifY99PRUOGfMqx4kJGN83xCPTH"
    "ow9nw/4EnIyBnM+nw9FH0ywTwQp61o9GWvM18pjgWgxrK9HEZ4hzaU/mSTwFElYMH2JmSA"
    "y27zQ6Wt4NjZfV1hf3tZb2IrW0aCovl+ADlpSU6zwZ3NOoPL+2FptrPNUFnlqurOXK7aFZ"
    "H6CP6QkTYN0TTldtuA8zOF2531bnL9pZXy19kM8fQ18E++3pC1/vKr1zJZC6hXt0/6w/9/"
    "uUiSrnUw60hedTb4PjqVd6OvWKh5OLZitm9l+XsmdarfRG44t7ArYE+A/IlvE1Tu81lCom"
    "VGSP8+9ulsvm+fHnIs39s/F7TQ7lYsZ0FB3gfYF0eW8EvZVNRPnEzoG2cGLvbzKz98un9v"
    "7S3LYkYZIMA67YQE6kR/2FTokGl0MW53oE7cQ/npX6Eb1ttn6GdPlo9pi4i+hcXkP6ZHg+"
    "uJwcn/+dWwAnx5OB8nS1dVGwNg8LBUqCgH+Hk1OgLsGX8WhQXCfJuMmXhsoJBoIahN4a0M"
    "70trE15uulSH6XNGAWGtwgIkqUv8KI9joBkOuxBlKDN9MAw+jAQdAVTioGBv5bm96St1xA"
    "FwEdjxdlQG0t1QFXRFBaIARhjqnml83ZNFvtWKxTOmQIw/ZjRLcw7sYiWzYNI7qolbaX/L"
    "5XrrSlpd/4jEwQW3hAPr0yIRe1qMZvDNhCencPN6B3t3i8pfQqV92/PHf/It9m+CoBcyK3"
    "99UEp4itYHfd+9vg82R975K8vp2NRx/j4cWGptZCXoAW8lJaxhf00enpG8b4Vbjyt70s8F"
    "E8FxXSF0TzE3/bq5vyuil/pqb8GDFsOY0VzXjkaa9rwmE65qH2u7zODze7lXrP36Xx/Mm/"
    "fixvKW/Ufyms9sE7A9mKF8b87t49ONjgFJWjSrd47St8bpSLqgLD0fAtZHd3Z2eTpnJnp7"
    "yrVL7CCUqJiITBTb/aZCD1h5uKH25+6WF2/z8Gju5s"
)
