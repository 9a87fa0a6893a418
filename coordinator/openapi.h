// The OpenAPI 3 document of the REST API (/api/v1), served at GET /api/openapi.json. Its source is
// coordinator/openapi.json in the repository (made by anneal-openapi-gen from the routes of coordinator/rest_api.h
// and the messages of protocol/anneal.proto; a test checks it is current); CMake embeds the file in the binary at
// build time (cmake/EmbedFiles.cmake, as the web console's files).
//
// Thread-safety: a constant.
//
// Example:
//   response.body = std::string(OpenApiDocument());
#pragma once

#include <string_view>

namespace anneal::coordinator {

std::string_view OpenApiDocument();

}  // namespace anneal::coordinator
