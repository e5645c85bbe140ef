{#- Refunds (GET /v3/orders/payment_actions/refunds, orders.v3.yml RefundID_Get): the money given back.
    The v2 order's `refunded_amount` is documented as always 0, so it is never read. A refund pays back
    through one or more `payments`; a payment the provider declined (`is_declined`) gave nothing back.
    Offline payments count: the merchant recorded that money went back outside BigCommerce
    (guides/orders-refunds.mdx "Offline order refunds"). A refund without payments counts its
    `total_amount`. Amounts are JSON numbers (2 decimals) in the order's transactional currency, so they
    stay decimal here and int_orders_unioned converts the order's sum to its minor units.
    Until the extract has created raw.bigcommerce_refunds the model is empty (net revenue = gross). -#}
{%- set refunds_exist = source_exists('bigcommerce', 'refunds') -%}
with

source as (

    {%- if refunds_exist %}
    select connection_id, pk, payload, loaded_at from ({{ raw_rows(source('bigcommerce', 'refunds')) }}) as refunds
    {%- else %}
    select null::text as connection_id, null::text as pk, null::jsonb as payload, null::timestamptz as loaded_at
    where false
    {%- endif %}

),

renamed as (

    select
        source.connection_id,
        source.pk as refund_id,
        nullif(trim(source.payload ->> 'order_id'), '') as order_id,
        case
            when payments.payment_count > 0 then coalesce(payments.paid_back_amount, 0)
            else {{ safe_numeric("source.payload ->> 'total_amount'") }}
        end as refunded_amount,
        case
            when payments.payment_count > 0 then payments.has_unreadable_amount
            else source.payload ->> 'total_amount' is null
                or {{ is_unreadable("source.payload ->> 'total_amount'", safe_numeric("source.payload ->> 'total_amount'")) }}
        end as has_unreadable_amount,
        {{ parse_rfc3339("source.payload ->> 'created'") }} as created_at,
        source.loaded_at

    from source
    -- each refund's payments summed beside it (a lateral aggregate, one row per refund), so a filter
    -- on the refund's keys or loaded_at reaches the raw table instead of aggregating every refund first
    cross join lateral (
        select
            count(*) as payment_count,
            sum({{ safe_numeric("payment ->> 'amount'") }})
                filter (where coalesce({{ safe_boolean("payment ->> 'is_declined'") }}, false) is false)
                as paid_back_amount,
            bool_or({{ is_unreadable("payment ->> 'amount'", safe_numeric("payment ->> 'amount'")) }})
                as has_unreadable_amount
        from jsonb_array_elements(
            -- the outer refund's payload (lateral): qualified on purpose
            case when jsonb_typeof(source.payload -> 'payments') = 'array'  -- noqa: RF03
                 then source.payload -> 'payments' else '[]'::jsonb end
        ) as payment
    ) as payments

)

select * from renamed
