{#- crm.contacts and crm.ecom_customers incremental. Both are projections of int_customers_unioned (the customers
    with a valid email in an enabled connection) grouped by contact: contacts by email, ecom_customers by
    (email, connection_id). int_customers_unioned records the contacts of every customer it rebuilds, as they
    were (its pre-hook) and as they are (its post-hook), in intermediate.incremental_contact_changes
    (macros/customers_rebuild.sql); a contact it did not record has the same customer rows as at this model's
    last build. The pre-hook of each model therefore computes pg_temp.<model>__rebuild (`by` columns):
      - the contacts int_customers_unioned recorded since this model's cutoff (an email changed: the old and the
        new contact; a customer gone: its last contact);
      - when whole_table_checks_due(['int_customers_unioned']) (no watermark yet, a connection added, enabled,
        disabled or deleted, a raw table truncated, int_customers_unioned built whole since), or the model's
        `definition` changed since its last build (crm.contacts: a customer tag var, customer_tags_definition();
        definition_changed(), macros/incremental.sql): every contact of this table and of int_customers_unioned;
    and deletes their rows; the model inserts the rows of those contacts that still have a customer, exactly as
    a full refresh would. Each model's rows are then one contact's rows or none, never a stale part of one. -#}
{% macro customer_contacts_rebuild_relation() -%}
    pg_temp.{{ this.identifier }}__rebuild
{%- endmacro %}

{% macro prepare_customer_contacts_rebuild(by, definition=none) -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    {%- set columns = by | join(', ') -%}
    drop table if exists {{ customer_contacts_rebuild_relation() }};

    create temporary table {{ this.identifier }}__rebuild as
    select {{ columns }}
    from {{ contact_changes_relation() }}
    where recorded_by = 'int_customers_unioned'
      and changed_at >= {{ incremental_cutoff() }}
    {%- set every = 'true' if whole_table_checks_due(['int_customers_unioned'])
                    else definition_changed(definition) if definition else none %}
    {%- if every %}
    union
    select {{ columns }} from {{ this }} where {{ every }}
    union
    select {{ columns }} from {{ ref('int_customers_unioned') }} where email is not null and {{ every }}
    {%- endif %};

    analyze {{ customer_contacts_rebuild_relation() }};  -- a temporary table: autovacuum never analyses it

    delete from {{ this }}
    where ({{ columns }}) in (select {{ columns }} from {{ customer_contacts_rebuild_relation() }})
    {%- endif -%}
{%- endmacro %}

{#- crm.contacts' definition: the tags it gives customers of each source (vars; the CRM settings fill them). -#}
{% macro customer_tags_definition() -%}
    {{ local_md5(var('bigcommerce_customer_tag') ~ '\n' ~ var('square_customer_tag')) }}
{%- endmacro %}

{#- The model's filter on int_customers_unioned (alias `customers`): on a scheduled run, the contacts its pre-hook
    deleted. -#}
{% macro rebuilt_customer_contacts(by) -%}
    {%- if is_incremental() %}
      and ({{ by | join(', ') }}) in (select {{ by | join(', ') }} from {{ customer_contacts_rebuild_relation() }})
    {%- endif %}
{%- endmacro %}
