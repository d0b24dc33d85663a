-- chat.message_keys loses its foreign key to chat.messages; a statement trigger keeps the
-- cascade on delete.
--
-- Why: a group message carries up to 1,000 keys, and the foreign key checked each inserted key
-- row against chat.messages one by one: 7 of the 25 ms a 999-key send cost PostgreSQL (measured
-- with chat.commit_messages, 20 sends). Keys are written only by chat.commit_messages, in the
-- same statement as their message and joined to it, so the insert-time check guarded nothing
-- that can happen. What the foreign key also did, deleting a message's keys with it (and so with
-- its conversation, whose messages cascade), the trigger below does once per statement.

alter table chat.message_keys drop constraint message_keys_conversation_id_sequence_fkey;

create function chat.delete_message_keys() returns trigger
language plpgsql
as $$
begin
    delete from chat.message_keys k
    using deleted_messages d
    where k.conversation_id = d.conversation_id and k.sequence = d.sequence;
    return null;
end
$$;

create trigger messages_delete_keys
    after delete on chat.messages
    referencing old table as deleted_messages
    for each statement
    execute function chat.delete_message_keys();

comment on function chat.delete_message_keys is
    'Deletes the keys of deleted messages (what the dropped foreign key''s on delete cascade did).';
