with

source as (

    {{ raw_rows(source('bigcommerce', 'customers')) }}

),

renamed as (

    select
        connection_id,
        pk as customer_id,
        {{ normalize_email("payload ->> 'email'") }} as email,
        nullif(trim(payload ->> 'first_name'), '') as first_name,
        nullif(trim(payload ->> 'last_name'), '') as last_name,
        nullif(trim(payload ->> 'phone'), '') as phone,
        {{ parse_rfc3339("payload ->> 'date_created'") }} as created_at,
        {{ parse_rfc3339("payload ->> 'date_modified'") }} as updated_at,
        loaded_at

    from source

)

select * from renamed
