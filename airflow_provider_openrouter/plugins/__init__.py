"""Airflow plugins shipped with the provider (registered through the provider info's ``plugins``).

Nothing here is imported by hooks, operators or sensors: DAG files never pay for it.
"""
