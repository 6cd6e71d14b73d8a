"""MLflow's own tables, created or migrated with MLflow's own migrations."""

from __future__ import annotations


def upgrade_mlflow_schema(database_url: str) -> None:
    from mlflow.store.db import utils
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        if not utils._all_tables_exist(engine):
            utils._initialize_tables(engine)
        elif utils._get_schema_version(engine) != utils._get_latest_schema_revision():
            utils._upgrade_db(engine)
    finally:
        engine.dispose()
