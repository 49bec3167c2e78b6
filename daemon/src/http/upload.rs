//! Multipart forms: the audio goes straight into an in-memory file (never the disk), the
//! other fields into strings; sizes are bounded as the bytes arrive.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::StatusCode;

use super::error::ApiError;
use crate::sys::MemFile;

/// A text field longer than this is refused (prompts are a few hundred bytes).
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// An uploaded form.
#[derive(Debug)]
pub(super) struct Form {
    pub(super) audio: MemFile,
    /// The client's file name, or the field's name when it gave none.
    pub(super) name: String,
    fields: HashMap<String, Vec<String>>,
}

impl Form {
    /// The last value of a text field.
    pub(super) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a repeated field (`timestamp_granularities[]`).
    pub(super) fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.fields
            .get(name)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// Reads a form whose audio is in `file_field`, refusing more than `limit` bytes of it.
pub(super) async fn read_form(
    multipart: Result<Multipart, MultipartRejection>,
    file_field: &'static str,
    limit: u64,
) -> Result<Form, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "expected a multipart/form-data body with a '{file_field}' field: {e}"
        ))
    })?;
    let mut audio: Option<(MemFile, String)> = None;
    let mut fields: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(mut field) = multipart.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == file_field {
            let file_name = field.file_name().unwrap_or(file_field).to_string();
            let mut file = MemFile::new(&file_name).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot hold the upload in memory: {e}"),
                )
            })?;
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                size += chunk.len() as u64;
                if size > limit {
                    return Err(too_large(limit));
                }
                file.write_all(&chunk).map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot hold the upload in memory: {e}"),
                    )
                })?;
            }
            audio = Some((file, file_name));
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                value.extend_from_slice(&chunk);
                if value.len() > MAX_FIELD_BYTES {
                    return Err(ApiError::bad_request(format!(
                        "field '{name}' is longer than {MAX_FIELD_BYTES} bytes"
                    )));
                }
            }
            let value = String::from_utf8(value)
                .map_err(|_| ApiError::bad_request(format!("field '{name}' is not UTF-8 text")))?;
            fields.entry(name).or_default().push(value);
        }
    }
    let Some((audio, name)) = audio else {
        return Err(
            ApiError::bad_request(format!("the form has no '{file_field}' field"))
                .param(file_field),
        );
    };
    if audio.is_empty().unwrap_or(true) {
        return Err(
            ApiError::bad_request(format!("{name}: the uploaded file is empty"))
                .param(file_field)
                .code("invalid_audio"),
        );
    }
    Ok(Form {
        audio,
        name,
        fields,
    })
}

/// Puts a WAV header before raw 16 kHz mono 16-bit PCM (whisper-asr-webservice's
/// `encode=false` uploads), so the decoder reads it like any file.
pub(super) fn wrap_raw_pcm(form: &mut Form) -> Result<(), ApiError> {
    let io = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot hold the upload in memory: {e}"),
        )
    };
    let mut data = Vec::new();
    let file = &mut form.audio;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    std::io::Read::read_to_end(file, &mut data).map_err(io)?;
    let mut wav = MemFile::new(&form.name).map_err(io)?;
    let bytes = u32::try_from(data.len() & !1).map_err(|_| too_large(u64::from(u32::MAX)))?;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + bytes).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&1u16.to_le_bytes()); // mono
    header.extend_from_slice(&16_000u32.to_le_bytes());
    header.extend_from_slice(&32_000u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&bytes.to_le_bytes());
    wav.write_all(&header).map_err(io)?;
    wav.write_all(&data[..bytes as usize]).map_err(io)?;
    form.audio = wav;
    Ok(())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the upload is larger than this service's limit of {limit} bytes"),
    )
    .param("file")
    .code("file_too_large")
}

fn form_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            format!("the upload is too large: {}", e.body_text()),
        )
        .code("file_too_large");
    }
    ApiError::new(
        status,
        format!("malformed multipart form: {}", e.body_text()),
    )
}
