{#- Post-hook of every model (dbt_project.yml): on an incremental run, each index of the model's `indexes` config
    that its table lacks (a table built before the index was configured) is created. dbt creates the configured
    indexes only when it creates the table (first build, --full-refresh), so without this an existing warehouse
    would read its incremental tables without them until its next full refresh. An index counts as present when
    one has exactly those columns, in that order. -#}
{% macro create_missing_indexes() -%}
    {%- set indexes = config.get('indexes') or [] -%}
    {%- if model.config.materialized != 'incremental' or not is_incremental() or not indexes -%}
    select 1
    {%- else -%}
    do $$
    begin
    {%- for index in indexes %}
        if not exists (
            select from pg_index as i
            where i.indrelid = '{{ this.include(database=false) }}'::regclass
              and array(
                  select a.attname::text
                  from unnest(i.indkey::int2[]) with ordinality as k (attnum, position)
                  inner join pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
                  order by k.position
              ) = array[{% for column in index.columns %}'{{ column }}'{% if not loop.last %}, {% endif %}{% endfor %}]::text[]
        ) then
            create index on {{ this }} ({{ index.columns | join(', ') }});
        end if;
    {%- endfor %}
    end
    $$
    {%- endif -%}
{%- endmacro %}
