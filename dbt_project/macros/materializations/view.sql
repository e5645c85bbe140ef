{#- dbt's view materialization (dbt-adapters, global_project/macros/materializations/models/view.sql), run only when
    the view's definition changed. dbt replaces every view on every build: it creates the new view, renames the
    old one away and drops it, each step under an ACCESS EXCLUSIVE lock, so a scheduled build waited for any
    open transaction that had read the view (a data engineer's session) and every later reader queued behind it; at
    scale 0.25 the 20 staging views cost 1–2 s of a 7 s scheduled build (docs/benchmarks.md), for SQL that only
    changes with the project.
    The view's comment records what built it: the model, the dbt version and the md5 of its compiled SQL and of
    the configs dbt's materialization applies besides it (grants, persist_docs, sql_header). A build leaves in
    place a view whose comment matches (its hooks still run) and hands anything else — no view yet, another
    comment, another relation type, --full-refresh — to dbt's materialization, then writes the comment. A view
    replaced by hand with CREATE OR REPLACE keeps its comment: --full-refresh puts the project's back. -#}
{% macro view_definition_comment(compiled_sql) -%}
    {#- what dbt's materialization applies besides the SQL: grants, comments, a SQL header -#}
    {%- set applied = [compiled_sql, config.get('grants'), config.get('persist_docs'), config.get('sql_header')] -%}
    dbt model {{ model.unique_id }}, dbt {{ dbt_version }}, definition md5 {{ local_md5(applied | tojson) }}
{%- endmacro %}

{%- materialization view, default -%}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set definition = view_definition_comment(sql) -%}
  {%- set unchanged = false -%}
  {%- if existing_relation is not none and existing_relation.type == 'view' and not should_full_refresh() -%}
    {%- set unchanged = run_query("select coalesce(obj_description(to_regclass("
                                  ~ dbt.string_literal(existing_relation.include(database=false))
                                  ~ "), 'pg_class') = " ~ dbt.string_literal(definition) ~ ", false)"
                                  ).columns[0].values()[0] -%}
  {%- endif -%}

  {%- if not unchanged -%}
    {%- set result = dbt.materialization_view_default() -%}
    {% call statement('view_definition_comment') -%}
      comment on view {{ target_relation }} is {{ dbt.string_literal(definition) }}
    {%- endcall %}
    {{ adapter.commit() }}
    {{ return(result) }}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% call statement('main') -%}
    -- {{ target_relation }}: its definition is unchanged ({{ definition }}), the view is left in place
    select 1
  {%- endcall %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{%- endmaterialization -%}
