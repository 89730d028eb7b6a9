-- Prompt evolution and A/B tests of prompt versions (issue 5).

-- How often evolution runs is a setting (EVOLUTION_EVERY), so the table no longer fixes 10.
ALTER TABLE evolution_rounds DROP CONSTRAINT evolution_rounds_sample_number_check;
ALTER TABLE evolution_rounds ADD CONSTRAINT evolution_rounds_sample_number_check
    CHECK (sample_number > 0);
ALTER TABLE evolution_rounds
    ADD COLUMN parent_version_id  bigint REFERENCES prompt_versions (id),
    ADD COLUMN new_version_id     bigint UNIQUE REFERENCES prompt_versions (id),
    ADD COLUMN evolver            text,
    ADD COLUMN fallback_reason    text,
    ADD COLUMN error              text,
    ADD COLUMN analysis           jsonb,
    ADD COLUMN started_at         timestamptz,
    ADD COLUMN finished_at        timestamptz;

-- One A/B test per new version: the next ``samples_planned`` experiments after the version is
-- created are its slots; slot k renders with the old version when k is odd, the new when even.
CREATE TABLE ab_tests (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    evolution_sample  integer     REFERENCES evolution_rounds (sample_number),
    old_version_id    bigint      NOT NULL REFERENCES prompt_versions (id),
    new_version_id    bigint      NOT NULL UNIQUE REFERENCES prompt_versions (id),
    samples_planned   integer     NOT NULL CHECK (samples_planned >= 2),
    status            text        NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'decided', 'cancelled')),
    old_n             integer,
    old_mean          double precision,
    new_n             integer,
    new_mean          double precision,
    winner            text        CHECK (winner IN ('old', 'new')),
    p_new_better      double precision CHECK (p_new_better BETWEEN 0 AND 1),
    promoted          boolean,
    note              text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    decided_at        timestamptz,
    CHECK (old_version_id <> new_version_id),
    CHECK ((status = 'decided') = (winner IS NOT NULL AND decided_at IS NOT NULL))
);
-- At most one running test, decided by the database.
CREATE UNIQUE INDEX ab_tests_one_running ON ab_tests ((true)) WHERE status = 'running';

-- A slot is claimed before its experiment renders (the experiment id is known then; the row
-- may never appear if both providers fail, so there is no foreign key). A claim whose
-- experiment is still unrated after AB_SLOT_TTL_SECONDS is handed to the next upload.
CREATE TABLE ab_slots (
    ab_test_id     bigint      NOT NULL REFERENCES ab_tests (id) ON DELETE CASCADE,
    slot           smallint    NOT NULL CHECK (slot >= 1),
    arm            text        NOT NULL CHECK (arm IN ('old', 'new')),
    experiment_id  text        NOT NULL UNIQUE,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ab_test_id, slot)
);
