-- The gateway's schema: trainers and their tokens, uploads and renders, experiments, ratings,
-- prompt versions, and the job queue that carries ML updates and prompt evolution.

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role           text        NOT NULL CHECK (role IN ('trainer', 'admin')),
    password_hash  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);

CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    token_prefix  text        NOT NULL,
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

CREATE TABLE prompt_versions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version            text        NOT NULL UNIQUE CHECK (version ~ '^v[0-9]+\.[0-9]+\.[0-9]+$'),
    prompt             text        NOT NULL CHECK (length(prompt) > 0),
    negative_prompt    text        NOT NULL DEFAULT '',
    parent_version     text        REFERENCES prompt_versions (version),
    origin             text        NOT NULL CHECK (origin IN ('seed', 'llm', 'heuristic', 'manual')),
    changes            jsonb       NOT NULL DEFAULT '[]'::jsonb,
    reasoning          text        NOT NULL DEFAULT '',
    status             text        NOT NULL DEFAULT 'candidate'
                       CHECK (status IN ('candidate', 'testing', 'active', 'retired', 'rejected')),
    is_current         boolean     NOT NULL DEFAULT false,
    performance_score  double precision CHECK (performance_score BETWEEN 1 AND 5),
    usage_count        integer     NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    created_at         timestamptz NOT NULL DEFAULT now()
);
-- At most one current version, decided by the database.
CREATE UNIQUE INDEX prompt_versions_one_current ON prompt_versions (is_current) WHERE is_current;

CREATE TABLE images (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id       text        NOT NULL CHECK (project_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    image_type       text        NOT NULL CHECK (image_type IN ('original', 'enhanced')),
    s3_bucket        text        NOT NULL,
    s3_key           text        NOT NULL,
    content_type     text        NOT NULL,
    byte_size        integer     NOT NULL CHECK (byte_size > 0),
    width            integer     NOT NULL CHECK (width > 0),
    height           integer     NOT NULL CHECK (height > 0),
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    parent_image_id  bigint      REFERENCES images (id),
    uploaded_by      bigint      REFERENCES users (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (s3_bucket, s3_key),
    -- an enhanced image always names the original it was made from
    CHECK ((image_type = 'original') = (parent_image_id IS NULL))
);
CREATE INDEX images_parent_idx ON images (parent_image_id);
CREATE INDEX images_project_idx ON images (project_id, created_at DESC);

CREATE TABLE experiments (
    id                 text        PRIMARY KEY CHECK (id ~ '^exp_[0-9A-Za-z]{10,40}$'),
    project_id         text        NOT NULL CHECK (project_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    mode               text        NOT NULL CHECK (mode IN ('ab', 'active')),
    original_image_id  bigint      NOT NULL REFERENCES images (id),
    prompt_version_id  bigint      NOT NULL REFERENCES prompt_versions (id),
    created_by         bigint      REFERENCES users (id),
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- set when the experiment is rated: the n-th sample, counted once, in the database
    sample_number      integer     UNIQUE CHECK (sample_number > 0),
    rated_at           timestamptz,
    CHECK ((sample_number IS NULL) = (rated_at IS NULL))
);
CREATE INDEX experiments_created_idx ON experiments (created_at DESC, id DESC);
CREATE INDEX experiments_project_idx ON experiments (project_id, created_at DESC);

-- One row per rendered option; parameters as JSON plus the documented columns for quick queries.
CREATE TABLE parameter_experiments (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id       text        NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    image_id            bigint      NOT NULL REFERENCES images (id),
    option              text        NOT NULL CHECK (option IN ('A', 'B')),
    api                 text        NOT NULL CHECK (api IN ('leonardo', 'stable_diffusion')),
    provider            text        NOT NULL CHECK (provider IN ('leonardo', 'replicate', 'local')),
    prompt_version_id   bigint      NOT NULL REFERENCES prompt_versions (id),
    parameters          jsonb       NOT NULL,
    init_strength       double precision,
    guidance_scale      double precision,
    controlnet_weight   double precision,
    suggestion_id       text,
    strategy            text,
    rating              smallint    CHECK (rating BETWEEN 1 AND 5),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (experiment_id, option),
    UNIQUE (experiment_id, option, image_id),
    UNIQUE (image_id)
);
CREATE INDEX parameter_experiments_prompt_idx ON parameter_experiments (prompt_version_id);
CREATE INDEX parameter_experiments_api_idx ON parameter_experiments (api, rating);

CREATE TABLE enhancement_ratings (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id  text        NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    image_id       bigint      NOT NULL REFERENCES images (id),
    option         text        NOT NULL CHECK (option IN ('A', 'B')),
    rating         smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comments       text        NOT NULL DEFAULT '' CHECK (length(comments) <= 2000),
    rated_by       bigint      REFERENCES users (id),
    rated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (experiment_id, option),
    -- the rated image must be the one rendered for that option of that experiment
    FOREIGN KEY (experiment_id, option, image_id)
        REFERENCES parameter_experiments (experiment_id, option, image_id) ON DELETE CASCADE
);
CREATE INDEX enhancement_ratings_image_idx ON enhancement_ratings (image_id);

-- Durable job queue on PostgreSQL (ML-update delivery, prompt evolution, reward retraining).
-- Workers claim with FOR UPDATE SKIP LOCKED; dedupe_key makes enqueueing idempotent.
CREATE TABLE jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind ~ '^[a-z_]{1,64}$'),
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key    text        UNIQUE,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after     timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX jobs_ready_idx ON jobs (run_after) WHERE status IN ('queued', 'running');
