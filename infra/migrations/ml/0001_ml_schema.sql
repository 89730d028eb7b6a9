-- The ML service owns its data in its own schema; the gateway never reads it.
CREATE SCHEMA IF NOT EXISTS ml;

CREATE TABLE ml.studies (
    name        text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO ml.studies (name) VALUES ('default');
