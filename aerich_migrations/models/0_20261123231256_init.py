from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE "rate_tick" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "tick_id" CHAR(32) NOT NULL UNIQUE,
    "exchanger" VARCHAR(32) NOT NULL,
    "direction" VARCHAR(32) NOT NULL,
    "value" DECIMAL(30,10) NOT NULL,
    "ts_ms" BIGINT NOT NULL,
    "transport" VARCHAR(8) NOT NULL,
    "legs" JSONB NOT NULL,
    "stream_id" VARCHAR(48) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "rate_tick_pair_ts_idx" ON "rate_tick" ("exchanger", "direction", "ts_ms");
COMMENT ON TABLE "rate_tick" IS 'Rate history: one row per published tick (idempotent on tick_id)';
CREATE TABLE "source_event" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "source" VARCHAR(32) NOT NULL,
    "state" VARCHAR(16) NOT NULL,
    "transport" VARCHAR(8) NOT NULL,
    "reason" TEXT NOT NULL,
    "ts_ms" BIGINT NOT NULL,
    "stream_id" VARCHAR(48) NOT NULL UNIQUE,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "source_event_source_ts_idx" ON "source_event" ("source", "ts_ms");
COMMENT ON TABLE "source_event" IS 'Source health history: up/down/stale events (idempotent on stream_id)';
CREATE TABLE "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


MODELS_STATE = (
    "eJztmV9z4jYQwL+Kxi8lMylHgCT03gghCZ0EbhJPe3NNxxa2AA225JNECJPmu1eS/xtDoL"
    "1JCeXNXu2u1j+tJe/6xfCpizxevYcC3dO58Rm8GAT6SF4Uh46BAYMgHVACAYee1mVSyRLY"
    "mWq1IRcMOkIOjKDHkRS5iDsMBwJTotSVTzDBXFC2+AwoQYDROQgQA8Fs6GE+QS5Q3kAFu8"
    "gPqEBESDUts7B7pGZxqSOnwWSsHA6ki9T0CXozBOhIe3YxQ46aGIwY9bUIPTsTSMZyuop+"
    "AmDbyQPY9lH1kTwSO5rLBpgDMZF+qA8x+YmDJCRnAaZIxg8BQ5IIfkIsjnuCRWg1I/i7jA"
    "UTFz0DSFzp7ZHwKQ4CqTpcaB2GAsqxYiG92/agDzqD/tVtr2OCywHoD8ybXv/atqvqqUN/"
    "lqBjJE2ZfPY//pRi7R9xdftijDDyXH1tJE+qicUk9NJxy+eGskXPAUOcSzmP3cUpkFCxAo"
    "iZJW2w+6ytF4FWMLS9XG1986psg6mlA8jlEnaVppZbse0FHveIuNK6Krqh5VBv5pNUP1iI"
    "CSWJASZCSceIIBWYmkGwmUovMvO8KBXjjAtBpSohoYyNi0Zw5qkkVdZhAKnMsCwJ3nromp"
    "ZlLCVwbJFJwUjkSIoShwyVawBjFcLPv9TrjcZ5vdY4a502z89PW7WW1NXxLg+dv4bBpLRC"
    "V5pZ77rXN1VAVL5h4bunBK/aBgpopYuf0o9SeXkJrrBE0plAVr4KGbvCUshnLC5FDH5318"
    "KHz5aHyFhM5G2jvgZz56Z9X2nUj/Kg+7+179VIXQ8p5Cni3IuWh7yab87oxxCOBSnidAve"
    "LcYRzO0w57awTTHnjA6YN8CsD9BlxJfIwT70yiknNgXCbmhUjYw/IO01dC+7nd5d+7bSqB"
    "2f1DRg/t3DAmXJN2tFvOHZu9WBmJi8fSZ+AKLveSxmsDNIeECZ2GbzyBnt4ebR2mDvaK3c"
    "OlrF1PbQuCSzf32QH7SleGP94qaBHQH+AvJ7/iOm9xqkioTy7HO5UWRZVu7aX4uYO7eDCw"
    "2HcjFm2ot2cFGALudG0C/9wlud2DmjPUzs5iaZ3Vyd2s2l3HYkMAnDgiUbyKUcEdhH5azz"
    "lsVcj0yr8cW7ou/TeeXo30CXj+YOiLcwwq/5NdDN3l33wWzffcm9AJdts6tG6lq6KEgrZ4"
    "UFSpyA33vmDVC34Nug3y2+J4me+c1QMcGZoBahcwu6mcIjlsa8dAU7mmaqKCUYQmc6h8y1"
    "lkZona7SXR7y635RAgkc69VScFWYUdPlgc6Yg7pPiIgVbZmCxvG67gzXuhZSyps1aELvYI"
    "KgJyZpp2YWfHLpnHziAnoIaH+82KNJ9pXyLk2JC9WpgSAMMu3IZIO27aPjuJWiukThHECO"
    "sMU/aYuEvjdug2RDsaKbQy9klz/6VvdC0qXf+KBMLPbwlPzxtaN8scV2fGODPcR7crYB3p"
    "PiGZfiVUOHIua9ixh5uPCyFpMpt/dywKnFXtBd9xHX/WquL2CSb7jbQf86Vi9WNYeGyA40"
    "RHalbtyh3wKHqvFQNX7YqrGNGHYmRkm1GI0cr6sSYarzVn24ep3fLsS2qov+L0VR/aR53m"
    "w1zprJfp9I1m3zb5c7T4jxLX+XZUz24mMmv8HXT0832OGl1sotXo/l93j1Um1BOFLfQ7on"
    "tdomBU+ttrriqS39LpMziqhztelvhYzJ4c/Cln8W/tPD7PVvTYtMaw=="
)
