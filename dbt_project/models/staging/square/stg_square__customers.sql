with

source as (

    select * from ({{ square_location_rows('customers') }}) as landed

),

renamed as (

    select
        connection_id,
        pk as customer_id,
        {{ normalize_email("payload ->> 'email_address'") }} as email,
        nullif(trim(payload ->> 'given_name'), '') as first_name,
        nullif(trim(payload ->> 'family_name'), '') as last_name,
        nullif(trim(payload ->> 'phone_number'), '') as phone,
        coalesce({{ safe_boolean("payload #>> '{preferences,email_unsubscribed}'") }}, false) as is_email_unsubscribed,
        {{ parse_rfc3339("payload ->> 'created_at'") }} as created_at,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at,
        loaded_at

    from source

)

select * from renamed
