{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='ecom_customer_key',
        indexes=[{'columns': ['ecom_customer_key']}, {'columns': ['email', 'connection_id']},
                 {'columns': ['landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_customer_contacts_rebuild(['email', 'connection_id']) }}"
    )
}}
{#- One CRM e-commerce customer per (connection, source customer) with a valid email.
    Incremental (macros/customer_contacts.sql): a scheduled run rebuilds the contacts (email, connection_id)
    whose customers int_customers_unioned rebuilt. -#}
with

customers as (

    select * from {{ ref('int_customers_unioned') }}
    -- S1: only customers with a (valid) email address reach the CRM; the rest are in excluded_records
    where email_status = 'valid'
      and {{ is_enabled_connection('connection_id') }}
      {{- rebuilt_customer_contacts(['email', 'connection_id']) }}

),

final as (

    select
        connection_id || '|' || customer_external_id as ecom_customer_key,
        connection_id,
        customer_external_id as external_id,
        email,
        accepts_marketing,
        landed_at
    from customers

)

select * from final
