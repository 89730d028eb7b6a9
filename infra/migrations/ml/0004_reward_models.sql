-- Trained reward models: the bytes live in the object store under object_key; this row is the
-- index of versions and says which one serves scoring (one current per study).
CREATE TABLE ml.reward_models (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study        text        NOT NULL,
    version      text        NOT NULL,
    object_key   text        NOT NULL,
    n_samples    integer     NOT NULL CHECK (n_samples >= 0),
    metrics      jsonb       NOT NULL,
    is_current   boolean     NOT NULL DEFAULT false,
    trained_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (study, version)
);
CREATE UNIQUE INDEX reward_models_one_current ON ml.reward_models (study) WHERE is_current;
