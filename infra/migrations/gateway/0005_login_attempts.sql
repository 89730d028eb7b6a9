-- Browser logins: every attempt is recorded, so that failures can be rate-limited per account
-- and per client address across all gateways.
CREATE TABLE login_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    client      text        NOT NULL,
    succeeded   boolean     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_name_idx ON login_attempts (name, at DESC) WHERE NOT succeeded;
CREATE INDEX login_attempts_client_idx ON login_attempts (client, at DESC) WHERE NOT succeeded;
