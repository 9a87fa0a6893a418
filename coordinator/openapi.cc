#include "coordinator/openapi.h"

#include "coordinator/web_console.h"

namespace anneal::coordinator {

// Generated from coordinator/openapi.json (cmake/EmbedFiles.cmake): one file.
const std::vector<EmbeddedFile>& EmbeddedOpenApiFiles();

std::string_view OpenApiDocument() {
  return EmbeddedOpenApiFiles().front().bytes;
}

}  // namespace anneal::coordinator
